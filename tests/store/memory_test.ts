import { MemoryStore } from "../../src/store/memory.ts";
import { runStoreConformance } from "./conformance.ts";

runStoreConformance("memory", () => Promise.resolve(new MemoryStore()));
