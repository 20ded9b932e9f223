/**
 * Schemas as the broker takes them. Moleculer declares `createService(schema: ServiceSchema<any,
 * any, any>)`, and a schema's `mixins` as `Partial<ServiceSchema>[]`: each service file and mixin
 * types its own settings, methods and vars (`ServiceSchema<Settings, Methods, Vars>`), and is
 * handed to the broker as one of these, with no cast.
 */
import type { ServiceSchema } from "moleculer";

/* eslint-disable @typescript-eslint/no-explicit-any -- Moleculer's own parameter types */
export type BrokerSchema = ServiceSchema<any, any, any>;
export type MixinSchema = Partial<ServiceSchema<any, any, any>>;
/* eslint-enable @typescript-eslint/no-explicit-any */
