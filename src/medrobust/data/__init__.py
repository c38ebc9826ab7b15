"""medrobust.data."""
