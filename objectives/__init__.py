"""Trial programs: what one trial computes and returns. `tokensqueeze` is the default."""
