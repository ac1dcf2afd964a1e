"""Entry point: python predict.py ckpt_path=<.ckpt | run dir | last> inputs=<image file | folder>"""

from transferlab.predict import main

if __name__ == "__main__":
    main()
