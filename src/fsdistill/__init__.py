"""few-shot-distillation: bake a k-shot teacher's in-context behaviour into a 0-shot student.

Import nothing heavy here: config validation must run before torch or transformers load.
"""

__version__ = "0.1.0"
