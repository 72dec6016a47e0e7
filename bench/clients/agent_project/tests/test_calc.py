import calc


def test_add():
    assert calc.add(2, 3) == 5


def test_divide():
    assert calc.divide(6, 3) == 2
