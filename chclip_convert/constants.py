"""Names shared by the command line and the library, kept free of heavy imports."""

DTYPE_CHOICES = ("auto", "float32", "float16", "bfloat16")
