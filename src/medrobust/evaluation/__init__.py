"""medrobust.evaluation."""
