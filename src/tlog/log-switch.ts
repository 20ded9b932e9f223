/**
 * The transparency logs (docs/design.md §8.4) are always kept. The benchmark alone stops their
 * work in its own process, for one run on a throwaway store: the signing threads hash no leaves,
 * records appends none to the signature log and the keyring none to the lease log, so the
 * store's logs lag its rows (`npm run bench`, `logsCost`). No configuration, variable or action
 * reaches this switch; a store written with it off is removed by the benchmark.
 */
import { BenchSwitch } from "../bench-switch";

export const transparencyLogs = new BenchSwitch();
