#!/usr/bin/env node
// argv -> Vm + monitors (placeholder until the console issue).
process.stdout.write('postcopy\n');
