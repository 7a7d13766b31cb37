"""Face detection and alignment as Sandberg does it: MTCNN (`mtcnn.py`, nets in `mtcnn_nets.py`),
his detect_face cascade (`detect.py`), OpenCV-exact INTER_AREA resampling (`resample.py`,
`crop_resize.py`), five-point alignment (`align.py`) and `facenet align` (`align_dataset.py`)."""
