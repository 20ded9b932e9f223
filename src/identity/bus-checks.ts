/**
 * The bus checks (dispatch tickets, lease tokens and store proofs, close proofs, batches
 * counted from what records holds) are always on. The benchmark alone turns them off, in its
 * own process, for one run: to measure what they cost against the same run without them
 * (`npm run bench`, `checksCost`). No configuration, variable or action reaches this switch.
 */
import { BenchSwitch } from "../bench-switch";

export const busChecks = new BenchSwitch();
