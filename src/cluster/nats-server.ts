/** The nats-server harness; moves here from test/support once its author has committed it. */
export * from "../../test/support/nats-server";
