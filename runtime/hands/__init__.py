"""Finding and following hands: MediaPipe's palm detector (palms.py) and landmark model
(finder.py) with their rotated rectangles (rects.py), box geometry (boxes.py), the tracker
(tracking.py) and its One Euro filters (filters.py)."""
