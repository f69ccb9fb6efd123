"""Write docs/config.md from the schema (fsdistill.tools.config_docs).

python scripts/gen_config_docs.py            # rewrite docs/config.md
python scripts/gen_config_docs.py --check    # exit 1 if docs/config.md is stale (CI)
"""

from fsdistill.tools.config_docs import main

if __name__ == "__main__":
    main()
