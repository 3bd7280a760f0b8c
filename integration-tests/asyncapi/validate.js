// Validates an AsyncAPI document with the AsyncAPI parser (and its Avro schema parser, so every
// Avro payload is checked too). Prints the problems and exits 1 when there is an error.
//
//   node validate.js schemas/asyncapi.json
const fs = require('fs');
const { Parser } = require('@asyncapi/parser');
const { AvroSchemaParser } = require('@asyncapi/avro-schema-parser');

async function main() {
  const file = process.argv[2];
  if (!file) {
    console.error('usage: validate.js DOCUMENT');
    process.exit(2);
  }
  const parser = new Parser();
  parser.registerSchemaParser(AvroSchemaParser());
  const { document, diagnostics } = await parser.parse(fs.readFileSync(file, 'utf8'), {
    source: file,
  });
  // Severity 0 is an error, 1 a warning, 2 information, 3 a hint.
  const errors = diagnostics.filter((d) => d.severity === 0);
  for (const d of diagnostics) {
    const where = d.path && d.path.length ? d.path.join('.') : '(document)';
    console.error(`${['error', 'warning', 'info', 'hint'][d.severity]}: ${where}: ${d.message}`);
  }
  if (!document || errors.length) {
    console.error(`${file}: ${errors.length} error(s)`);
    process.exit(1);
  }
  const channels = document.channels().length;
  const messages = document.components().messages().length;
  const operations = document.operations().length;
  console.log(JSON.stringify({ valid: true, channels, messages, operations, warnings: diagnostics.length - errors.length }));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
