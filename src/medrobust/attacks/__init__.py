"""medrobust.attacks."""
