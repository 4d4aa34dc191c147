"""The standard data sets read where they ship (VOC, Cityscapes, ADE20K, COCO-Stuff, CamVid, TianChi, Meter and
plain list files): one module per layout with its split finder, split names and built-in class mapping; the reader
table (`segwise.data.readers`) registers them."""
