"""Talk to a checkpoint, an exported model or a base model with its training prompt (fsdistill.eval.chat;
installed as fsdistill-chat). See `python scripts/chat.py --help`."""

from fsdistill.eval.chat import main

if __name__ == "__main__":
    main()
