"""What serving and training share: the model specs, the decode policy, the tensors."""
