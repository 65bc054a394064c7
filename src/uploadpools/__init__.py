"""Upload Pools: post short videos from FIFO pools on a fixed rhythm."""
