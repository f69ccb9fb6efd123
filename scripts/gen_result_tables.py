"""Rewrite the result tables and prose figures of README.md and compute.md from the committed JSON
(fsdistill.tools.result_tables, fsdistill.tools.prose_figures).

python scripts/gen_result_tables.py            # rewrite the tables and prose figures
python scripts/gen_result_tables.py --check    # exit 1 if one differs from its JSON (CI)
"""

from fsdistill.tools.result_tables import main

if __name__ == "__main__":
    main()
