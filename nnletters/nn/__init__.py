"""The numeric core: pure NumPy, float32, no file I/O. Read it in this order:

1. ``functional`` - activations and their derivatives, stable log-softmax, the losses, each
   returning ``(loss, dlogits)``; tables keyed by the config's names.
2. ``layers`` - Dense, Activation, Dropout, BatchNorm: each ``forward`` next to its
   ``backward``, the chain rule written out.
3. ``model`` - the MLP: a stack of layers over one flat parameter vector ``theta``.
4. ``optim``, ``schedules``, ``ema`` - how the weights move: optimisers with their state,
   learning-rate schedules, the weight average.
5. ``gradcheck`` - backprop checked against central differences.
"""
