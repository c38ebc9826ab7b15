"""medrobust.models."""
