"""One tier's work on a record: classify the attempt, decide what next, build what it emits."""
