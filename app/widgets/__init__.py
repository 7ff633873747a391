"""Small reusable widgets of DTL Studio."""
