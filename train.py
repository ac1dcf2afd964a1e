"""Entry point: python train.py model=efficientnet_lite0 data=fashion_mnist strategy=partial"""

from transferlab.train import main

if __name__ == "__main__":
    main()
