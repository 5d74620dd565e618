#!/usr/bin/env node
// Compiles the contracts in this folder with the project-pinned solcjs (tools/node_modules/solc)
// and writes one artifact per contract ({contractName, compiler, abi, bytecode,
// deployedBytecode}) as pretty-printed JSON with a trailing newline.
//
//   node crates/tally-chain/contracts/compile.js [OUT_DIR]
//
// OUT_DIR defaults to crates/tally-chain/artifacts. Output is a pure function of the sources,
// the settings below and the compiler version, so a test can recompile into a temporary folder
// and compare byte for byte with the committed artifacts.
'use strict';

const fs = require('fs');
const path = require('path');

const EXPECTED_SOLC = '0.8.30';
const SOURCES = ['Tally.sol', 'TestToken.sol'];

const here = __dirname;
const repo = path.resolve(here, '..', '..', '..');
const solcPath = path.join(repo, 'tools', 'node_modules', 'solc');

function fail(msg) {
  process.stderr.write(`compile.js: ${msg}\n`);
  process.exit(1);
}

let solc;
try {
  solc = require(solcPath);
} catch (e) {
  fail(`cannot load solc from ${solcPath} (run: bash tools/install.sh): ${e.message}`);
}

const version = solc.version();
if (!version.startsWith(EXPECTED_SOLC + '+')) {
  fail(`expected solc ${EXPECTED_SOLC}, found ${version}`);
}

const input = {
  language: 'Solidity',
  sources: {},
  settings: {
    evmVersion: 'cancun',
    optimizer: { enabled: true, runs: 10000 },
    metadata: { bytecodeHash: 'none', appendCBOR: false },
    outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object', 'evm.deployedBytecode.object'] } },
  },
};
for (const file of SOURCES) {
  input.sources[file] = { content: fs.readFileSync(path.join(here, file), 'utf8') };
}

const output = JSON.parse(solc.compile(JSON.stringify(input)));
const errors = (output.errors || []).filter((e) => e.severity === 'error');
for (const e of output.errors || []) {
  process.stderr.write(e.formattedMessage || e.message);
}
if (errors.length > 0) fail(`${errors.length} compile error(s)`);

const outDir = path.resolve(process.argv[2] || path.join(here, '..', 'artifacts'));
fs.mkdirSync(outDir, { recursive: true });
for (const file of SOURCES) {
  for (const [name, contract] of Object.entries(output.contracts[file]).sort()) {
    const artifact = {
      contractName: name,
      compiler: `solc ${version}`,
      abi: contract.abi,
      bytecode: '0x' + contract.evm.bytecode.object,
      deployedBytecode: '0x' + contract.evm.deployedBytecode.object,
    };
    fs.writeFileSync(path.join(outDir, `${name}.json`), JSON.stringify(artifact, null, 2) + '\n');
  }
}
