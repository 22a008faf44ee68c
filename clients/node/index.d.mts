// Type declarations of the ES module entry point (index.mjs): the same API as index.d.ts.
import * as client from './index.js';

export * from './index.js';
export default client;
