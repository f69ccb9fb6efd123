"""A served teacher's cost against the local one on the same sequences (fsdistill.tools.served_teacher_cost)."""

from fsdistill.tools.served_teacher_cost import main

if __name__ == "__main__":
    main()
