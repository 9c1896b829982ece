"""Text in: corpus files, the vocabulary, token files, the train/validation split, and
the tf.data pipelines over them. Only `pipeline` imports TensorFlow."""
