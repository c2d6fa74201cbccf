"""Pure tensor operations shared by the model, the losses and the deploy code."""
