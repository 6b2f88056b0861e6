"""In-processing fairness methods and the shared Trainer loop (built by the train issue)."""
