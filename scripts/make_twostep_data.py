"""Write the twostep task's data, data/twostep/{train,validation,test}.jsonl (fsdistill.tools.twostep)."""

from fsdistill.tools.twostep import main

if __name__ == "__main__":
    main()
