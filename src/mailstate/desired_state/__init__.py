"""The desired state: model, loader, validation, naming policy."""
