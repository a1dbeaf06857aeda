"""handssca.training: data sets, losses and the training loop that produce HandSSCA weights."""
