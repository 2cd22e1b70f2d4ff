"""Is the model overfitting? Checks on the training history, advice, and the Markdown rendering."""
