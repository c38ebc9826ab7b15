"""medrobust.report."""
