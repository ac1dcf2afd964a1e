"""Entry point: python eval.py ckpt_path=logs/train/runs/<run>/checkpoints/last.ckpt"""

from transferlab.eval import main

if __name__ == "__main__":
    main()
