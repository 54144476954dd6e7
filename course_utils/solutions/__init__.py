"""Reference solutions to the notebooks' exercises, one module per notebook.

Try the exercise first; the checkers in ``course_utils.exercises`` compare against these.
"""
