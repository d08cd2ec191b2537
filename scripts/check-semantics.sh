#!/usr/bin/env bash
# Checks the tests doc/SEMANTICS.md cites: every `<file>.rs::<name>` in backticks (the file's path
# from the repository root, under tests/, src/ or crates/) must name a file that defines `fn <name>`.
# Prints each citation that does not hold, and exits 1 if there is one (or if none is found at all).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

DOC=doc/SEMANTICS.md
mapfile -t CITES < <(grep -oE '`(tests|src|crates)/[A-Za-z0-9_./-]+\.rs::[A-Za-z_][A-Za-z0-9_]*`' "$DOC" | tr -d '`' | sort -u)
if [ ${#CITES[@]} -eq 0 ]; then
  echo "$DOC: no test citations found (expected \`<file>.rs::<name>\`)" >&2
  exit 1
fi

BAD=0
for c in "${CITES[@]}"; do
  file="${c%%::*}"
  name="${c##*::}"
  if [ ! -f "$file" ]; then
    echo "$DOC: cites $c, but $file does not exist" >&2
    BAD=$((BAD + 1))
  elif ! grep -qE "^[[:space:]]*(pub(\([a-z]+\))? )?(async )?fn ${name}[[:space:]]*[(<]" "$file"; then
    echo "$DOC: cites $c, but $file has no fn $name" >&2
    BAD=$((BAD + 1))
  fi
done
if [ "$BAD" -gt 0 ]; then
  echo "$DOC: $BAD of ${#CITES[@]} cited tests not found" >&2
  exit 1
fi
echo "$DOC: all ${#CITES[@]} cited tests exist"
