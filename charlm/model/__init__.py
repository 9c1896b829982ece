"""The network: config to Keras layers (build), one character at a time for generation
(step), and the fused recurrent loop that trains the stock layers faster on a CPU
(fused)."""
