'use strict';
// Copy the repository's proto/sidecar/v1/identity.proto into this package (`npm run sync-proto`);
// test/proto.test.js fails when the copy drifts.
const fs = require('node:fs');
const path = require('node:path');

const from = path.join(__dirname, '..', '..', '..', 'proto', 'sidecar', 'v1', 'identity.proto');
const to = path.join(__dirname, '..', 'proto', 'sidecar', 'v1', 'identity.proto');
fs.mkdirSync(path.dirname(to), { recursive: true });
fs.copyFileSync(from, to);
console.log(`copied ${from} -> ${to}`);
