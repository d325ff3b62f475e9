"""hsm as a Hydra launcher: ``python train.py -m hydra/launcher=hsm lr=1e-4,3e-4``.

Hydra finds it in the ``hydra_plugins`` namespace package once hsm is installed with its
``hydra`` extra (``pip install 'hsm[hydra]'``). See docs/hydra.md.
"""
