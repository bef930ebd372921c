B=second
