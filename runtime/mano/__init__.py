"""The hand model: MANO's arrays and forward kinematics in numpy (model.py), MANO files read safely
(files.py), the built-in stand-in hand (builtin.py), the choice between them (load.py), and the
conventions of the data sets' hands (conventions.py)."""
