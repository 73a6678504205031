"""Training entry point: ``python train.py fit --config configs/<name>.yaml`` (see upconv/training/cli.py)."""

from upconv.training.cli import main

if __name__ == "__main__":
    main()
