"""Problems, traces and grading."""
