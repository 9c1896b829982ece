"""Seeing inside a model: what each recurrent layer's units and gates hold after each
character (activations), which units follow simple properties of the text (units), and
a page that shows both beside the model's surprise at each character (page)."""
