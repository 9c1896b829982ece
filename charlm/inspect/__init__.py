"""Seeing inside a model: what each recurrent layer's units and gates hold after each
character (activations), which units follow simple properties of the text (units), and
a page that shows both beside the model's surprise at each character (page)."""

# Light on purpose (the CLI reads these before anything heavy is imported).
MAX_CHARS = 50_000  # characters `charlm inspect` reads by default
MAX_VALUES = 4_000_000  # unit values a page holds by default (one byte each)
