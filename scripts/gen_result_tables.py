"""Rewrite the result tables of README.md and compute.md from the committed JSON (fsdistill.tools.result_tables).

python scripts/gen_result_tables.py            # rewrite the tables
python scripts/gen_result_tables.py --check    # exit 1 if a table differs from its JSON (CI)
"""

from fsdistill.tools.result_tables import main

if __name__ == "__main__":
    main()
