"""medrobust.training."""
