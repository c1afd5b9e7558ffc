"""Training the neural codec on CPU: synthetic raws by unprocessing, the one training raw
(HERO6) rendered many ways, a patch cache, and a resumable rate-distortion training loop.

    rawmeta train --config configs/train-n1.json          # build cache if missing, train
    rawmeta train --config ... --export weights/ --id ID  # ship a checkpoint as a named model
"""
