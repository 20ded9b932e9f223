export * from "../../src/cluster/nats-server";
