"""The label of a token position that no loss counts: padding, prompt and image positions.

-100 is the convention of ``torch.nn.functional.cross_entropy`` and of every Hugging Face model,
so labels built by prsl's adapters can go to any of their losses and back.
"""

IGNORE_INDEX = -100
