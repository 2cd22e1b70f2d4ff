"""What a person reads: the map stage's reports, the split check, the overfitting verdict, the index page."""
