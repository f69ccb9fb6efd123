"""Rewrite README.md's result tables from the committed summary JSON (fsdistill.tools.readme_tables).

python scripts/gen_readme_tables.py            # rewrite the tables
python scripts/gen_readme_tables.py --check    # exit 1 if a table differs from its JSON (CI)
"""

from fsdistill.tools.readme_tables import main

if __name__ == "__main__":
    main()
